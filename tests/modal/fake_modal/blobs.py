"""HTTP side server standing in for S3-style blob storage.

The real client asks the control plane for an upload URL (BlobCreate) and a download URL (BlobGet),
then talks plain HTTP to those URLs.  A single-part PUT must answer with an ``ETag`` header holding
the quoted hex md5 of the body: the client checks it.
"""

from __future__ import annotations

import hashlib

from aiohttp import web


def make_blob_app(blobs: dict[str, bytes]) -> web.Application:
    async def put_blob(request: web.Request) -> web.Response:
        blob_id = request.match_info["blob_id"]
        body = await request.read()
        blobs[blob_id] = body
        return web.Response(status=200, headers={"ETag": '"%s"' % hashlib.md5(body).hexdigest()})

    async def get_blob(request: web.Request) -> web.Response:
        blob_id = request.match_info["blob_id"]
        if blob_id not in blobs:
            return web.Response(status=404, text=f"no blob {blob_id}")
        return web.Response(status=200, body=blobs[blob_id])

    app = web.Application(client_max_size=1024**3)
    app.router.add_put("/blobs/{blob_id}", put_blob)
    app.router.add_get("/blobs/{blob_id}", get_blob)
    return app
