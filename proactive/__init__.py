"""proactive: Microsoft Teams proactive messages from an Azure Functions app.

The house, from the ground up (each layer imports only from the layers below it;
tests/test_architecture.py holds it):

    errors.py, app_only.py, hosting.py, setting_ids.py, telemetry.py, users_file.py
                 the failure model, the app-only contract fields, where it runs, logs
    contract/    the outbox message (contract v1): OutboxMessage, parsed and checked
    teams/       Teams' services: the Connector, Graph, the bot's token, clouds
    config.py    the settings, validated all at once
    storage/     Table and Queue Storage: every row and queue message
    scheduling/, delivering/, receiving/   the parts: scheduled sends, what the
                 worker sends, what Teams sends the bot
    runtime.py   the process's shared clients and stores, handed to the parts as `rt`
    worker.py, triggers.py, api/, cli/, reporting/   the routers, the HTTP API, the
                 CLI and the reports they serve
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
