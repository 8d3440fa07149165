-- lowBalance (docs/semantics.md): every month of the window has a day whose end-of-day balance is
-- strictly below the threshold; amount = the lowest end-of-day balance of the window.
-- End of day d: balance - (Σ amounts with d < bookingDate <= balanceDate)
--             = balance - (Σ amounts booked up to balanceDate) + (Σ amounts booked up to min(d, balanceDate)).
COPY (
    WITH acc AS (
        SELECT userId, accountId, balance, balanceDate FROM accounts WHERE accountType = '{account_type}'
    ),
    daily AS (  -- net amount booked per day, only what the stored balance includes
        SELECT a.userId, a.accountId, t.bookingDate AS day, sum(t.amount) AS net
        FROM acc a JOIN transactions t ON t.userId = a.userId AND t.accountId = a.accountId
        WHERE t.bookingDate <= a.balanceDate
        GROUP BY a.userId, a.accountId, t.bookingDate
    ),
    cumulative AS (
        SELECT userId, accountId, day,
               sum(net) OVER (PARTITION BY userId, accountId ORDER BY day) AS upto,
               sum(net) OVER (PARTITION BY userId, accountId) AS total
        FROM daily
    ),
    days AS (
        SELECT CAST(range AS DATE) AS day FROM range(DATE '{first_day}', DATE '{last_day}' + INTERVAL 1 DAY, INTERVAL 1 DAY)
    ),
    grid AS (SELECT a.*, d.day FROM acc a CROSS JOIN days d),
    totals AS (SELECT DISTINCT userId, accountId, total FROM cumulative),
    end_of_day AS (
        SELECT g.userId, g.accountId, g.day,
               g.balance - coalesce(tt.total, 0) + coalesce(c.upto, 0) AS eod
        FROM grid g
        ASOF LEFT JOIN cumulative c ON c.userId = g.userId AND c.accountId = g.accountId AND g.day >= c.day
        LEFT JOIN totals tt ON tt.userId = g.userId AND tt.accountId = g.accountId
    ),
    per_account AS (
        SELECT userId, accountId, min(eod) AS lowest,
               count(DISTINCT date_trunc('month', day)) FILTER (WHERE eod < {threshold}) AS months_below
        FROM end_of_day
        GROUP BY userId, accountId
    )
    SELECT userId,
           list({{'accountId': accountId, 'amount': CAST(lowest AS VARCHAR)}} ORDER BY accountId) AS accounts
    FROM per_account
    WHERE months_below = {months}
    GROUP BY userId
    ORDER BY userId
) TO '{out}' (FORMAT json);
