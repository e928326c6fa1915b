"""Whether each lower SP is there: a line in the log when it goes away and when it comes back.

The lower-SP client (``child_agent``) reconnects its streams quietly, as it should; but an operator
reading the upper SP's log must see that a lower SP went away, and when it returned. This follows the
connectivity of the channel to each lower SP: leaving READY is "went away" (a warning), READY again
is "is back". The channel stays busy with the note and watch streams, so READY means reachable.
"""

from __future__ import annotations

import logging

import grpc

log = logging.getLogger(__name__)

_AWAY = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.SHUTDOWN)


async def follow_presence(sp_id: str, address: str, channel: grpc.aio.Channel) -> None:
    """Log each time the lower SP ``sp_id`` goes away and comes back, until cancelled."""
    state = channel.get_state(try_to_connect=True)
    seen_ready = state is grpc.ChannelConnectivity.READY
    away = False
    while True:
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)
        if state is grpc.ChannelConnectivity.READY:
            if away:
                log.info("lower SP %s at %s is back", sp_id, address)
            elif not seen_ready:
                log.info("lower SP %s at %s connected", sp_id, address)
            seen_ready, away = True, False
        elif state in _AWAY and seen_ready and not away:
            log.warning("lower SP %s at %s went away (%s); reconnecting", sp_id, address, state.name)
            away = True


__all__ = ["follow_presence"]
