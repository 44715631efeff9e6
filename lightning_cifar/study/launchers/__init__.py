"""Where a study's runs execute: one after the other in this process (``local``), or as Ray tasks (``ray``)."""
