"""Where the stack keeps its data: PostgreSQL (:mod:`.database`, schema upgrades in
:mod:`.upgrade`) and the S3 bucket (:mod:`.storage`)."""
