# Progress lines of the quickstarts (sourced, not run): a bold step, an indented note.
bold() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }
