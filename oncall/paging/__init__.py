"""Escalation: page level 1 of the owning team's policy, then the next level whenever a page stays
unacknowledged for the level's delay; timers live in the ``pages`` table (they survive restarts and
each level is paged at most once); an acknowledgement or the resolution stops the chain.

``planner`` decides (pure); ``escalation`` applies the decisions to the store and returns the pages
the caller must send (the caller writes them to its outbox in the same transaction).
"""
