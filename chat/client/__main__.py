"""
C{python -m chat.client}: the same as the C{chat} command.
"""

from chat.client.cli import run

run()
