"""The ClientApp as `fedprge run` deploys it on Flower's simulation runtime: the same app as
`clients.app:app`, with client processes that Ray starts again when one dies.

Flower's runtime creates its client actors with the resources of the federation config only, so
with Ray's default (no restarts) a client process killed mid-message (the OOM killer, a stray
kill) stays dead, and Flower keeps handing messages to it: every later message to that process
fails. Giving Flower's actor class unlimited restarts makes Ray start a fresh process in its
place; the server sends the lost message again (FederatedServer.exchange), so the run's results
do not change. Flower loads the ClientApp (importing this module) before it creates the actors.
"""

from __future__ import annotations

from flwr.simulation.ray_transport.ray_actor import ClientAppActor

from clients.app import app

ACTOR_RESTARTS = -1  # no limit: the server resends a lost message a bounded number of times

ClientAppActor._default_options["max_restarts"] = ACTOR_RESTARTS

__all__ = ["app"]
