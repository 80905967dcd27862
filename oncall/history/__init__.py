"""What the agent learns from incidents once they happened: similar past incidents (``similar``),
impact (``impact``), phase timings (``phases``) and the post-mortem draft (``postmortem``, built as a
``document`` that renders to Markdown here and to Atlassian Document Format for Jira)."""
