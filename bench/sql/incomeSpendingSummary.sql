-- incomeSpendingSummary (docs/semantics.md): per account, incoming (amount > 0) and outgoing (amount < 0)
-- counts and sums of the transactions with dateFrom <= bookingDate <= dateTo; zero amounts count
-- in neither; users with at least one counted transaction.
COPY (
    WITH acc AS (
        SELECT userId, accountId FROM accounts WHERE {account_type} IS NULL OR accountType = {account_type}
    ),
    per_account AS (
        SELECT a.userId, a.accountId,
               count(*) FILTER (WHERE t.amount > 0) AS inc_n,
               count(*) FILTER (WHERE t.amount < 0) AS out_n,
               coalesce(sum(t.amount) FILTER (WHERE t.amount > 0), 0) AS inc,
               coalesce(-sum(t.amount) FILTER (WHERE t.amount < 0), 0) AS out
        FROM acc a JOIN transactions t ON t.userId = a.userId AND t.accountId = a.accountId
        WHERE t.bookingDate BETWEEN DATE '{date_from}' AND DATE '{date_to}'
        GROUP BY a.userId, a.accountId
        HAVING count(*) FILTER (WHERE t.amount <> 0) > 0
    )
    SELECT userId,
           sum(inc_n) AS incomingCount, sum(out_n) AS outgoingCount,
           CAST(CAST(sum(inc) AS DECIMAL(38, 2)) AS VARCHAR) AS incomingAmount,
           CAST(CAST(sum(out) AS DECIMAL(38, 2)) AS VARCHAR) AS outgoingAmount,
           list({{'accountId': accountId, 'incomingCount': inc_n, 'outgoingCount': out_n,
                  'incomingAmount': CAST(CAST(inc AS DECIMAL(38, 2)) AS VARCHAR),
                  'outgoingAmount': CAST(CAST(out AS DECIMAL(38, 2)) AS VARCHAR)}} ORDER BY accountId) AS accounts
    FROM per_account
    GROUP BY userId
    ORDER BY userId
) TO '{out}' (FORMAT json);
