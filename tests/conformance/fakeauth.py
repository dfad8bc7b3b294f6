"""A stand-in for keystonemiddleware's authtoken filter, for conformance tests only.

Real deployments validate `X-Auth-Token` against Keystone, which then hands Cinder the
caller's identity as trusted headers (`X-User-Id`, `X-Project-Id`, `X-Roles`) for the
`keystonecontext` filter. Here the token itself carries them:

    X-Auth-Token: <user>:<project>[:<role>,<role>...]     (no roles: admin)

so tests can act as an admin or as a member+reader user through any HTTP client, and the
proxy forwards nothing but the token, as it does in production.
"""

IDENTITY = (
    "HTTP_X_USER_ID", "HTTP_X_USER", "HTTP_X_USER_NAME", "HTTP_X_PROJECT_ID", "HTTP_X_TENANT_ID",
    "HTTP_X_TENANT", "HTTP_X_ROLES", "HTTP_X_ROLE", "HTTP_X_IDENTITY_STATUS", "HTTP_X_SERVICE_CATALOG",
)

UNAUTHORIZED = (b'{"error": {"code": 401, "title": "Unauthorized", '
                b'"message": "The request you have made requires authentication."}}')


class FakeAuthToken:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        for key in IDENTITY:
            environ.pop(key, None)
        token = environ.get("HTTP_X_AUTH_TOKEN", "")
        parts = token.split(":")
        if not token or len(parts) < 2:
            start_response("401 Unauthorized", [("Content-Type", "application/json"),
                                                ("Content-Length", str(len(UNAUTHORIZED)))])
            return [UNAUTHORIZED]
        user, project = parts[0], parts[1]
        roles = parts[2] if len(parts) > 2 and parts[2] else "admin"
        environ["HTTP_X_USER_ID"] = user
        environ["HTTP_X_PROJECT_ID"] = project
        environ["HTTP_X_ROLES"] = roles
        environ["HTTP_X_IDENTITY_STATUS"] = "Confirmed"
        return self.app(environ, start_response)


def filter_factory(global_conf, **local_conf):
    return FakeAuthToken
