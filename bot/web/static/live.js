// Mission Control's only script: new activity lines arrive over server-sent events and are
// put at the top of the list, newest first. Text only (textContent), never HTML.
"use strict";
(function () {
  const list = document.getElementById("activity");
  if (!list || !window.EventSource) {
    return;
  }
  const params = new URLSearchParams({ after: list.dataset.after || "0" });
  if (list.dataset.agent) {
    params.set("agent", list.dataset.agent);
  }
  const source = new EventSource("/events?" + params.toString());
  source.onmessage = function (event) {
    const line = JSON.parse(event.data);
    const empty = list.querySelector(".empty");
    if (empty) {
      empty.remove();
    }
    const item = document.createElement("li");
    item.className = "feed-" + line.feed + " new";
    item.dataset.id = String(line.id);
    const time = document.createElement("time");
    time.textContent = line.when;
    const text = document.createElement("span");
    text.textContent = line.text;
    item.append(time, " ", text);
    list.prepend(item);
  };
})();
