"""Azure Functions entry point (Python v2 programming model).

The triggers live in `proactive.triggers`, the HTTP API for producers in
`proactive.api.routes`; this file only assembles the app.
"""

import azure.functions as func

from proactive.api.routes import bp as api
from proactive.triggers import bp

app = func.FunctionApp()
app.register_functions(bp)
app.register_functions(api)
