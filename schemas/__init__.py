"""Descriptor schemas at the edge: strict pydantic models of operators' files, mapped onto the core's dataclasses."""
