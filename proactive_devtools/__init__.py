"""Development tools: everything that runs only on a developer's machine or in CI.

Not part of the product and never deployed (.funcignore leaves this folder out):
the built-in Functions host (`localhost`), the Connector emulator (`emulator`),
a fake Azure AD (`fake_aad`), the Agents Playground driver (`playground`), the
one-command dev launcher (`dev`), process helpers (`processes`), the Teams
app package builder (`package`: app_package, manifest_check, app_icons), the
Teams user played (`user`) and the docs' screenshots copied small (`shots`).

`python -m proactive host|emulator|dev|package` hands over here; `python -m
proactive_devtools host|emulator|dev|package` is the same.
"""

from __future__ import annotations

TOOLS = ("host", "emulator", "dev", "package", "user", "shots")


def run_tool(name: str, argv: list[str]) -> int:
    if name == "host":
        from .localhost import main as host_main

        return host_main(argv)
    if name == "emulator":
        from .emulator import main as emulator_main

        return emulator_main(argv)
    if name == "dev":
        from .dev import main as dev_main

        return dev_main(argv)
    if name == "package":
        from .app_package import main as package_main

        return package_main(argv)
    if name == "user":  # play the Teams user: a read receipt, an ack press
        from .user import main as user_main

        return user_main(argv)
    if name == "shots":  # the browser tests' screenshots into docs/ui/, small
        from .docs_shots import main as shots_main

        return shots_main(argv)
    raise ValueError(f"unknown tool {name!r}; one of {', '.join(TOOLS)}")
