"""Jira Cloud REST v3: issues for incidents (``client``) with descriptions in Atlassian Document Format (``adf``)."""
