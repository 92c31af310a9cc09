"""The reviewer console: where trust-and-safety experts take part in the loop. Signed-in users
claim review requests from a leased queue, label them with the keyboard, and their labels go to
`moderation.review.labeled` like any other client's; leads watch the queue, agreement and the gate.
Served by `borderline console` (Starlette, Jinja2, htmx vendored in ``static/``)."""
