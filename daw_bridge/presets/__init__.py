"""Effect presets for stems: a TOML file per preset, validated, applied with pedalboard.

``schema`` reads and checks preset files (no audio libraries imported, so listing
and validating stay quick), ``library`` finds built-in and user presets by name,
``plugins`` knows the pedalboard effects a preset may use and builds them, and
``apply`` streams raw stems through a preset into a folder beside them.
"""
