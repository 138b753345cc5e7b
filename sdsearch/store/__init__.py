"""The study storage: one storage-URL rule, opening Optuna storages safely, the RDB storage that rides
out a lost database, and what sdsearch stores in a study."""
