"""Web pages for people: the resident portal (/portal/), the worker's counter desk (/desk/)
and the auditor console (/console/). `api.pages.install.install_pages` mounts them.

Server-rendered (Jinja2), a little JavaScript at most, no build step. Pages never read
the vault themselves: they call the HTTP API in process with the person's own token.
"""
