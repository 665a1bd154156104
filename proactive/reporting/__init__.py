"""Reports for people and the HTTP API: per send (every recipient's result)
and reach (who can't be reached, and why), streamed as CSV or JSON Lines.

    reports.py       `send_report` and `reach_report`, page by page
"""

__all__ = ["reports"]
