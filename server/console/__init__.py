"""The admin console: server-rendered pages under ``/console`` (issue 18).

Pages are Jinja2 templates rendered by the server; they use no script, and their one style
sheet is served by us, so the console works on a network without internet and under a Content
Security Policy that allows nothing from another host.  Forms post back and redirect (post,
redirect, get).  Login is by API key (or a pasted OIDC access token) into a server-side session;
every action goes through the service functions the REST API calls, and is audited.
"""

from server.console.app import CONSOLE_PREFIX, STATIC_PREFIX, ConsoleGate, create_console

__all__ = ["CONSOLE_PREFIX", "STATIC_PREFIX", "ConsoleGate", "create_console"]
