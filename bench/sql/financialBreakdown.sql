-- financialBreakdown (docs/semantics.md): per label group and month of the window, the signed total and
-- count of the transactions having a label of includeLabels and none of excludeLabels; over the
-- N monthly totals (empty months are 0) total, average, minimum, maximum, median and population
-- standard deviation, derived values rounded half-even to cents. All statistics in integer cents.
COPY (
    WITH groups(g, alias, include, exclude) AS (VALUES {groups}),
    months(i, month, first_day, last_day) AS (VALUES {months}),
    in_window AS (
        SELECT t.userId, strftime(t.bookingDate, '%Y-%m') AS month, t.amount, t.labels
        FROM transactions t
        JOIN accounts a ON a.userId = t.userId AND a.accountId = t.accountId
        WHERE t.bookingDate BETWEEN (SELECT min(first_day) FROM months) AND (SELECT max(last_day) FROM months)
    ),
    matching AS (
        SELECT w.userId, gr.g, m.i, w.amount
        FROM in_window w
        JOIN months m ON m.month = w.month
        CROSS JOIN groups gr
        WHERE list_has_any(w.labels, gr.include) AND NOT list_has_any(w.labels, gr.exclude)
    ),
    present AS (SELECT DISTINCT userId FROM matching),
    cells AS (  -- every (user, group, month), empty ones included
        SELECT p.userId, gr.g, gr.alias, m.i, m.month,
               coalesce(CAST(sum(x.amount) * 100 AS HUGEINT), 0) AS cents, count(x.amount) AS n
        FROM present p CROSS JOIN groups gr CROSS JOIN months m
        LEFT JOIN matching x ON x.userId = p.userId AND x.g = gr.g AND x.i = m.i
        GROUP BY p.userId, gr.g, gr.alias, m.i, m.month
    ),
    sums AS (
        SELECT userId, g, alias,
               sum(cents) AS s, sum(cents * cents) AS s2, count(*) AS k,
               min(cents) AS lo, max(cents) AS hi,
               list_sort(list(cents)) AS sorted,
               list({{'month': month, 'total': cents, 'count': n}} ORDER BY i) AS months
        FROM cells GROUP BY userId, g, alias
    ),
    halves AS (  -- exact integer pieces of average, median and deviation
        SELECT *,
               -- median: the middle value, or the two middle values summed (halved below)
               CASE WHEN k % 2 = 1 THEN 2 * sorted[k // 2 + 1] ELSE sorted[k // 2] + sorted[k // 2 + 1] END AS median2,
               -- k^2 * variance = k * Σx^2 - (Σx)^2
               k * s2 - s * s AS v
        FROM sums
    ),
    roots AS (
        SELECT *, CAST(floor(sqrt(CAST(v AS DOUBLE)) / k) AS HUGEINT) AS r0 FROM halves
    ),
    roots_fixed AS (  -- r = floor(sqrt(v) / k) exactly: the largest r with (r k)^2 <= v
        SELECT *,
               r0 - CASE WHEN (r0 * k) * (r0 * k) > v THEN 1 ELSE 0 END
                  + CASE WHEN ((r0 + 1) * k) * ((r0 + 1) * k) <= v THEN 1 ELSE 0 END AS r
        FROM roots
    ),
    stats AS (
        SELECT userId, g, alias, s, lo, hi, months,
               -- a / b rounded half-even, b > 0: q = floor(a / b), remainder rem in [0, b)
               (s - ((s % k) + k) % k) // k AS avg_q, ((s % k) + k) % k AS avg_r, k,
               (median2 - ((median2 % 2) + 2) % 2) // 2 AS med_q, ((median2 % 2) + 2) % 2 AS med_r,
               r,
               -- sqrt(v)/k vs r + 1/2: compare 4v with ((2r + 1) k)^2
               CASE WHEN 4 * v < ((2 * r + 1) * k) * ((2 * r + 1) * k) THEN -1
                    WHEN 4 * v > ((2 * r + 1) * k) * ((2 * r + 1) * k) THEN 1 ELSE 0 END AS sd_cmp
        FROM roots_fixed
    ),
    rounded AS (
        SELECT userId, g, alias, s, lo, hi, months,
               avg_q + CASE WHEN 2 * avg_r > k THEN 1 WHEN 2 * avg_r < k THEN 0 ELSE abs(avg_q % 2) END AS average,
               med_q + CASE WHEN med_r = 1 THEN abs(med_q % 2) ELSE 0 END AS median,
               r + CASE WHEN sd_cmp > 0 THEN 1 WHEN sd_cmp < 0 THEN 0 ELSE abs(r % 2) END AS sd
        FROM stats
    )
    SELECT userId,
           list({{'alias': alias,
                  'total': money(s), 'average': money(average), 'minimum': money(lo), 'maximum': money(hi),
                  'median': money(median), 'standardDeviation': money(sd),
                  'months': list_transform(months, lambda x: {{'month': x.month, 'total': money(x.total), 'count': x.count}})}}
                ORDER BY g) AS labelGroups
    FROM rounded
    GROUP BY userId
    ORDER BY userId
) TO '{out}' (FORMAT json);
