"""Users for a send from a file: the CLI's `--users-file` (README "Audiences")."""

from __future__ import annotations

from pathlib import Path

# Columns of a users CSV that name a user, in order of preference.
_USER_COLUMNS = ("id", "aadobjectid", "objectid", "upn", "userprincipalname", "email", "mail")


def read_users_file(path: Path) -> list[str]:
    """Users from a CSV with a header naming an id / upn / email column, or a
    text file with one per line (README "Audiences"). Raises ValueError."""
    import csv

    text = path.read_text(encoding="utf-8-sig")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} lists no users")
    if "," not in lines[0] and ";" not in lines[0] and lines[0].strip().lower() not in \
            _USER_COLUMNS:
        return [line.strip() for line in lines]
    header = next(csv.reader([lines[0]], delimiter=";" if ";" in lines[0] else ","))
    names = [h.strip().lower().replace("_", "").replace(" ", "") for h in header]
    column = next((names.index(c) for c in _USER_COLUMNS if c in names), None)
    if column is None:
        raise ValueError(f"{path}: the header names no user column (one of "
                         f"{', '.join(_USER_COLUMNS)})")
    rows = csv.reader(lines[1:], delimiter=";" if ";" in lines[0] else ",")
    users = [row[column].strip() for row in rows if len(row) > column and row[column].strip()]
    if not users:
        raise ValueError(f"{path} lists no users")
    return users
