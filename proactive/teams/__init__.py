"""Talking to Teams' services: the Bot Connector and Microsoft Graph, the bot's
token for them, and where that token may go. Below config: its Settings are
Protocols of the fields each module reads.

Modules, from the token to the call:

    clouds.py        cloud presets: token authorities and the hosts a token may go to
    credentials.py   the bot's own token, cached and refreshed (`build_token_provider`)
    msal_sources.py  where it comes from: MSAL client secret/certificate, managed identity
    certificates.py  a certificate credential read from a PEM file
    service_urls.py  which serviceUrls the bot may call (and send its token to)
    transport.py     one HTTP request, its failures as members of proactive.errors
    connector.py     the Bot Connector REST API v3 client
    activity.py      one inbound activity as the app keeps it (`Activity`, `Change`)
    graph.py         the few Graph calls that reach users the bot never met

The package imports none of them itself (import the module you need).
"""

__all__ = ["activity", "certificates", "clouds", "connector", "credentials", "graph",
           "msal_sources", "service_urls", "transport"]
