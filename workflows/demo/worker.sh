#!/bin/sh
# The demo's headless worker: `mcc worker run` starts it once per task, with
# MCC_TASK_ID and MCC_ATTEMPT in its environment. No AI, no network.
set -eu
mkdir -p demo-out/notes
sleep 0.4 # pretend to think, so the workers visibly overlap

topic_of() {
  case "$1" in
    note-1) echo leases ;; note-2) echo attempts ;; note-3) echo reservations ;;
    note-4) echo reports ;; note-5) echo phases ;; note-6) echo recipes ;;
  esac
}

case "$MCC_TASK_ID" in
  index)
    {
      echo "# Notes"
      for f in demo-out/notes/*.md; do echo "- [$(basename "$f" .md)]($f)"; done
    } > demo-out/INDEX.md
    ;;
  note-*)
    topic=$(topic_of "$MCC_TASK_ID")
    out="demo-out/notes/$topic.md"
    if [ "$MCC_TASK_ID" = note-2 ] && [ "$MCC_ATTEMPT" = 1 ]; then
      # A sloppy first draft, so the demo shows a rejection and a retry.
      echo "# $topic: todo" > "$out"
    else
      {
        echo "# $topic"
        echo
        echo "This note about $topic was written by $MCC_WORKER on attempt $MCC_ATTEMPT."
        echo "In mcc, $topic are one of the primitives the hub supplies to every workflow,"
        echo "so that several chats can share one project without stepping on each other."
        echo "The workflow decides the policy; the hub keeps the state durable and exact."
      } > "$out"
    fi
    ;;
  *)
    echo "unknown task $MCC_TASK_ID" >&2
    exit 1
    ;;
esac
