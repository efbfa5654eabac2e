# Sourced by the closed-loop benchmark scripts (closed_loop_standard.sh, closed_loop_reground.sh).
# t NAME OUT CMD...: run CMD unless OUT exists; log to $R/NAME.log, its time to $R/times.txt
t() {
  local n=$1 out=$2; shift 2
  [ -e "$out" ] && { echo "$n: reusing $out"; return; }
  local s; s=$(date +%s)
  "$@" > "$R/$n.log" 2>&1
  echo "$n $(( $(date +%s) - s )) s" >> "$R/times.txt"; tail -n 3 "$R/$n.log"
}
