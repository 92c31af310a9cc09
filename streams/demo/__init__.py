"""`borderline demo`: the whole loop on the embedded services with a simulated expert panel, a live
view and a report. Tooling: the service never imports it."""
