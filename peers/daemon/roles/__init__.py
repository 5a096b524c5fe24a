"""The peer's roles, each a class with one job over the one `PeerContext` (mailbox, store, ledger, client).

* `budget.Budget`: this peer's ledger: reserve, commit, release, each audited.
* `participating.Participating`: jobs this peer joins: accept or decline a proposal,
  reserve its budget, run its SuperNode, report its spending, expire overdue acceptances.
* `hosting.Hosting`: jobs this peer hosts: propose, collect decisions, start the
  SuperLink, collect reports, publish the model.
* `cancellation.Cancellation`: either side cancels an active job.
* `replication.Replication`: keep a verified copy of a job's published model.
* `list_serving.ListServing`: serve PSI and anonymous-query lists; log this peer's own runs.
* `vertical.Vertical`: vertical jobs (the coded scheme): the feature party's alignment, one release
  and scoring answers; the label holder's alignment, training and scoring.
* `reconciliation.Reconciliation`: at start, make the store, ledger and processes agree.
* `views.Views`: what a member may read (no state change).

Every state change runs in the context's mailbox, one at a time; `service.PeerService`
builds the context and the roles and is what the HTTP layer calls.
"""
