"""DVC stage, first of all: check params.yaml (and its profile) before any stage removes outputs.

DVC deletes a stage's outputs before running it, so `dvc exp run -S quantizer=nope` used to
lose data/ids before quantize refused the value. This stage reads every params section, sits
upstream of all others, and writes a file whose content never depends on the values: valid
params leave everything downstream up to date; a bad one stops the run here, touching nothing.
"""

from __future__ import annotations


from semid.artifacts import PARAMS_CHECKED
from semid.config import ConfigError, load_params
from semid.io import atomic_path
from semid.stages.common import stage_main

CONTENT = "params.yaml passed semid's checks (python -m semid.stages.check_params)\n"


@stage_main
def main() -> None:
    try:
        load_params()
    except ConfigError as error:
        raise ConfigError(
            f"{error} (no stage ran, no output was removed; fix the value, or `git checkout params.yaml` "
            "to return to the committed params)"
        ) from None
    with atomic_path(PARAMS_CHECKED.at()) as tmp:
        tmp.write_text(CONTENT)


if __name__ == "__main__":
    main()
