// Drives the page's real key queue (src/inquire/web/static/keyqueue.js) for
// tests/test_web_keyqueue.py: one JSON command per input line, one JSON state per output line.
//   {"op": "reset"}                       a new search
//   {"op": "push", "action": {...}}       a key press / tap / click (see keyqueue.js)
//   {"op": "arrived", "n": N, "done": B}  more results came: N loaded in all
//   {"op": "hold"}                        a ranking round starts
//   {"op": "relearn", "keep": K, "n": N, "done": B}  its results: from K on, N in all
// The host keeps the marks by result index; the state says where the cursor is, which
// marks are set, how many actions wait and whether more results were asked for.
"use strict";
const path = require("path");
const readline = require("readline");
const {KeyQueue} = require(path.resolve(process.argv[2]));

let marks = {}, asked = 0, selected = -1, undone = 0;
const host = {
  mark(i, value) {
    const prev = marks[i] || "clear";
    if (value === "clear") delete marks[i]; else marks[i] = value;
    return prev;
  },
  select(i) { selected = i; },
  more() { asked += 1; },
  undone(u) { if (u) undone += 1; },
};
const kq = new KeyQueue(host);
const rl = readline.createInterface({input: process.stdin});
rl.on("line", (line) => {
  const cmd = JSON.parse(line);
  if (cmd.op === "reset") { kq.reset(); marks = {}; asked = 0; selected = -1; undone = 0; }
  else if (cmd.op === "push") kq.push(cmd.action);
  else if (cmd.op === "arrived") { asked = 0; kq.arrived(cmd.n, cmd.done); }
  else if (cmd.op === "hold") kq.hold();
  else if (cmd.op === "relearn") { asked = 0; kq.relearn(cmd.keep, cmd.n, cmd.done); }
  process.stdout.write(JSON.stringify({
    cur: kq.cur, selected, marks, waiting: kq.queue.length, asked, undo: kq.undo.length, undone,
  }) + "\n");
});
