// Usage: the jobs metered per segment type in a month (a job counts once, when it completes, in
// the month it was created).

import { typeTitle } from "./api.js";
import { barChart } from "./charts.js";
import { errorBox, field, h, table, fill } from "./ui.js";

export async function usagePage(context) {
  const { api, main } = context;
  const month = h("input", { type: "month", value: new Date().toISOString().slice(0, 7), required: true });
  const results = h("div");
  const form = h(
    "form",
    { class: "filters", "aria-label": "Month" },
    field("Month", month, { field: "month", hint: "YYYY-MM, in UTC." }),
    h("button", { type: "submit" }, "Show usage"),
  );
  fill(main, h("h1", {}, "Usage"), form, results);

  async function load() {
    fill(results, h("p", { class: "loading" }, "Loading usage…"));
    try {
      const usage = await api.get("/usage", { month: month.value });
      const total = usage.usage.reduce((sum, u) => sum + u.jobs, 0);
      fill(results,
        table(
          "Jobs per segment type",
          ["Segment type", "Jobs"],
          [
            ...usage.usage.map((u) => h("tr", {}, h("td", {}, typeTitle(u.segmentType)), h("td", { class: "number" }, u.jobs))),
            h("tr", { class: "total" }, h("th", { scope: "row" }, "Total"), h("td", { class: "number" }, total)),
          ],
        ),
        barChart(
          "Jobs per segment type",
          usage.usage.map((u) => ({ label: typeTitle(u.segmentType), value: u.jobs })),
        ),
      );
    } catch (error) {
      fill(results, errorBox(error));
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  await load();
}
