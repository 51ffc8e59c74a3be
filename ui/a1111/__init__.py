"""The A1111-compatible API (`/sdapi/v1`): routes.py mounts it, payload.py reads request
bodies, responses.py shapes the answers, options.py keeps each caller's options."""
