import sys

from . import TOOLS, run_tool

if len(sys.argv) < 2 or sys.argv[1] not in TOOLS:
    print(f"usage: python -m proactive_devtools {{{'|'.join(TOOLS)}}} [options]", file=sys.stderr)
    sys.exit(2)
sys.exit(run_tool(sys.argv[1], sys.argv[2:]))
