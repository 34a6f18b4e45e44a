"""Prompt templates for VLM reasoning (template files rendered with strict variables). Not part of
this version yet."""
