"""Update stage: find image references in a checkout and splice new values into file bytes.

Local files only: no network, no Git. The result (``update.result.UpdateResult``) is the
only contract with the publish stage.
"""
