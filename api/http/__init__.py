"""The HTTP way in: the app, middleware, routes, problem details."""
