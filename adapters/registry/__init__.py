"""Stage "promote": adapter artifacts (files, sha256, base model) and the Redis registry that
records which adapter serves each policy, with promotion, rollback and the change channel that
every worker follows."""
