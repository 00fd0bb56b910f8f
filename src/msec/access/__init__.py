"""The access layer: principals, policies on the twin, consent, audit (issue 4, in progress)."""
