"""
C{python -m chat.check HOST PORT}: run the conformance checker.
"""

from chat.check.cli import run

run()
