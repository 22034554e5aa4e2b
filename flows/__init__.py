"""insarflow flows: compose tasks; the stack configuration model and the CLI live here."""
