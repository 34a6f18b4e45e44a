"""geosleuth as a tool other agents call: an MCP server (:mod:`.mcp`) and LangChain tools
(:mod:`.langchain`), both adapters of the same three declarations in :mod:`.tools` (``locate``,
``explain``, ``ask``) and the one :class:`~geosleuth.integrations.tools.IntegrationContext` they
run in. Importing this package imports neither MCP nor LangChain."""
