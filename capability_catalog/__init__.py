"""Capability notes: what an SP sells, as published to the SPs above it."""
