"""proactive: Microsoft Teams proactive messages from an Azure Functions app."""

__version__ = "0.1.0"
