"""`sdsearch train` and `sdsearch predict`: a fixed config trained into the files a device runs, and
those files used."""
