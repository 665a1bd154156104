"""Azure Functions entry point (Python v2 programming model).

The triggers live in `proactive.triggers`; this file only assembles the app.
"""

import azure.functions as func

from proactive.triggers import bp

app = func.FunctionApp()
app.register_functions(bp)
