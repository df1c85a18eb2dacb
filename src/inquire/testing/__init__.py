"""inquire's own test kit: fake servers, fixture data and tiny models, usable without pytest.

Nothing here is imported by the library itself.
"""
