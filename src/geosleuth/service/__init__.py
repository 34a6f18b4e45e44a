"""geosleuth as a service: the HTTP API of ``geosleuth serve`` (extra ``serve``).

* :mod:`~geosleuth.service.app`: :func:`create_app`, the FastAPI app around a Locator;
* :mod:`~geosleuth.service.storage`: predictions, jobs and chat sessions in SQLite or PostgreSQL;
* :mod:`~geosleuth.service.fetch`: the SSRF-safe fetch of photo URLs;
* :mod:`~geosleuth.service.limits`: API keys and rate limits;
* :mod:`~geosleuth.service.jobs`: the bounded worker pool and the job runner;
* :mod:`~geosleuth.service.chat`: chat sessions over :class:`geosleuth.chat.Conversation`;
* :mod:`~geosleuth.service.metrics`: Prometheus text.

Importing this package imports none of them (FastAPI is only needed by ``app``)."""
