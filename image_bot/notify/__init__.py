"""Notifications: events from the engine, delivered to people (Apprise) and programs (webhook).

Knows no pipeline stage: the engine builds :class:`~image_bot.notify.notifying.Event` values
and hands them over; delivery happens on a background thread and never blocks a cycle.
"""
