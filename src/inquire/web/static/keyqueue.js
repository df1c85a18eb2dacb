"use strict";
// The key queue of the verification page: every key press (and tap or click on a result)
// becomes an action that is applied in order, to the result it was meant for, even when that
// result is not loaded yet. An action that needs a result past the loaded ones (moving down
// from the last loaded result, or a mark's move to the next one) waits, with every action
// after it, until more results arrive; at the end of the ranking it stops at the last result.
//
// No DOM here: the page passes a `host` with three functions, so the same file runs in node
// for the tests (tests/test_web_keyqueue.py drives it with hypothesis against a model):
//   host.mark(i, value) -> the mark result i had before ("clear" when none); value is
//                          "relevant" | "not_relevant" | "unsure" | "clear"
//   host.select(i)      -> show result i as the current one
//   host.more()         -> load more results; the page calls arrived(n, done) when they came
//                          (calling it while a load is under way must do nothing)
//   host.undone(u)      -> optional: an undo was applied ({i, prev}), or null: nothing to undo
// Actions: {op: "down"} | {op: "up"} | {op: "mark", value} | {op: "markAt", i, value} (a tap
// on result i) | {op: "goto", i} (a click) | {op: "undo"}.
(function (root) {
  function KeyQueue(host) {
    this.host = host;
    this.reset();
  }
  // A new search: nothing loaded, the cursor before the first result, no actions, no undo.
  KeyQueue.prototype.reset = function () {
    this.cur = -1;       // the current result (index), -1 before the first load
    this.loaded = 0;     // results loaded so far
    this.done = false;   // true once the ranking has no more results
    this.queue = [];     // actions not applied yet, in key order
    this.undo = [];      // {i, prev} of applied marks, newest last
    this.held = false;   // a ranking round runs: every action waits for its results
  };
  // A ranking round starts: it replaces the results after the cursor, so every action from
  // now on waits for it (relearn) and applies to the results it shows; or for arrived() when
  // it fails.
  KeyQueue.prototype.hold = function () { this.held = true; };
  KeyQueue.prototype.push = function (action) {
    this.queue.push(action);
    this.drain();
  };
  // More results arrived: `loaded` results in all, `done` when the ranking has no more.
  KeyQueue.prototype.arrived = function (loaded, done) {
    this.held = false;
    this.loaded = loaded;
    this.done = !!done;
    if (this.cur < 0 && loaded > 0) { this.cur = 0; this.host.select(0); }
    this.drain();
  };
  // After a ranking round: results from `keep` on were replaced; `loaded` results in all.
  // Taps and clicks that waited for the round were on results it replaced (from keep on):
  // they are dropped (another result is there now).
  KeyQueue.prototype.relearn = function (keep, loaded, done) {
    this.held = false;
    this.undo = this.undo.filter(function (u) { return u.i < keep; });
    this.queue = this.queue.filter(function (a) { return !((a.op === "markAt" || a.op === "goto") && a.i >= keep); });
    this.loaded = loaded;
    this.done = !!done;
    if (keep < loaded) { this.cur = keep; this.host.select(keep); }
    else if (this.cur >= loaded) { this.cur = loaded - 1; if (this.cur >= 0) this.host.select(this.cur); }
    this.drain();
  };
  // Whether the actions wait for results that are not loaded yet.
  KeyQueue.prototype.waiting = function () { return this.queue.length > 0; };

  // Apply actions from the head of the queue until it is empty or the head needs a result
  // that is not loaded yet (then ask for more and wait).
  KeyQueue.prototype.drain = function () {
    while (this.queue.length) {
      if (this.held) return;  // a ranking round runs: relearn() goes on
      const a = this.queue[0];
      if (this.cur < 0) {  // nothing loaded yet: every action waits for the first results
        if (this.done) { this.queue.length = 0; return; }
        this.host.more();
        return;
      }
      if (a.op === "down") {
        if (this.cur + 1 < this.loaded) { this.cur += 1; this.host.select(this.cur); }
        else if (!this.done) { this.host.more(); return; }
        this.queue.shift();
      } else if (a.op === "up") {
        if (this.cur > 0) { this.cur -= 1; this.host.select(this.cur); }
        this.queue.shift();
      } else if (a.op === "mark" || a.op === "markAt") {
        const i = a.op === "mark" ? this.cur : a.i;
        if (i >= 0 && i < this.loaded) {
          const prev = this.host.mark(i, a.value);
          this.undo.push({i: i, prev: prev});
          if (this.cur !== i) { this.cur = i; this.host.select(i); }
          this.queue[0] = {op: "down"};  // then the cursor moves on, when it can
        } else {
          this.queue.shift();
        }
      } else if (a.op === "goto") {
        if (a.i >= 0 && a.i < this.loaded) { this.cur = a.i; this.host.select(a.i); }
        this.queue.shift();
      } else if (a.op === "undo") {
        const u = this.undo.pop();
        if (u) {
          this.host.mark(u.i, u.prev);
          this.cur = u.i;
          this.host.select(u.i);
        }
        if (this.host.undone) this.host.undone(u || null);
        this.queue.shift();
      } else {
        this.queue.shift();  // unknown: ignored
      }
    }
  };

  if (typeof module === "object" && module.exports) module.exports = {KeyQueue: KeyQueue};
  else root.KeyQueue = KeyQueue;
})(typeof globalThis !== "undefined" ? globalThis : this);
