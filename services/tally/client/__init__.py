"""The analyst's and data provider's side of Tally: the Python SDK and the ``tally`` CLI.

It talks to the parties' services over their REST APIs only; it never
imports the services themselves.
"""
