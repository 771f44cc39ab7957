"""The OpenAI-compatible serving endpoint under /v1 (a sibling of app/web and app/api: it imports
app/http and the services, never the pages or the management API)."""

from app.openai_api import routes
from app.openai_api.errors import install_error_handlers

ROUTERS = (routes.router,)

__all__ = ["ROUTERS", "install_error_handlers"]
