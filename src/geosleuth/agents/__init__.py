"""The planner and verifier. Today: the evidence-only pipeline (:mod:`.pipeline`) and its fusion
verifier (:mod:`.fusion`). The LangGraph planner that adds retrieval and VLM stages builds on them."""
