"""
Makes the tests import the package from this checkout, not an installed copy.
"""
