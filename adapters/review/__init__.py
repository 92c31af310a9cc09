"""Stage "route and curate": which items go to expert review, and why. Routing by the policy's
review band, the selectors (uncertain, boundary pairs, audit, diversity), the mining window, the
review budget and the evidence shown with a request. Pure: no I/O, no clock, no global random
state."""
