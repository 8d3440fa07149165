-- insuranceSpending (docs/semantics.md): outgoing transactions of the window carrying an insurance label,
-- grouped by (account, provider key, type).
COPY (
    WITH payments AS (
        SELECT t.userId, t.accountId, t.transactionId, t.bookingDate, t.amount,
               -- trimmed, inner whitespace collapsed
               regexp_replace(regexp_replace(coalesce(t.counterpartName, ''), '^\s+|\s+$', '', 'g'), '\s+', ' ', 'g') AS name,
               CASE
                   WHEN list_contains(t.labels, 'HEALTHINSURANCE') THEN 'HEALTH'
                   WHEN list_contains(t.labels, 'LIFEINSURANCE') THEN 'LIFE'
                   WHEN list_contains(t.labels, 'LIABILITYINSURANCE') THEN 'LIABILITY'
                   WHEN list_contains(t.labels, 'CARINSURANCE') THEN 'CAR'
                   WHEN list_contains(t.labels, 'HOUSEHOLDINSURANCE') THEN 'HOUSEHOLD'
                   WHEN list_contains(t.labels, 'LEGALINSURANCE') THEN 'LEGAL_PROTECTION'
                   WHEN list_contains(t.labels, 'INSURANCE') THEN 'OTHER'
               END AS insuranceType
        FROM transactions t JOIN accounts a ON a.userId = t.userId AND a.accountId = t.accountId
        WHERE t.amount < 0 AND t.bookingDate BETWEEN DATE '{first_day}' AND DATE '{last_day}'
    ),
    keyed AS (
        SELECT *, upper(name) AS providerKey FROM payments WHERE insuranceType IS NOT NULL
    ),
    latest AS (
        SELECT userId, accountId, insuranceType, providerKey, name AS provider, -amount AS amount, bookingDate AS lastPaymentDate
        FROM (
            SELECT *, row_number() OVER (PARTITION BY userId, accountId, insuranceType, providerKey
                                         ORDER BY bookingDate DESC, transactionId DESC) AS rn
            FROM keyed
        ) WHERE rn = 1
    ),
    totals AS (
        SELECT userId, accountId, insuranceType, providerKey, count(*) AS paymentsCount, -sum(amount) AS totalAmount
        FROM keyed GROUP BY ALL
    ),
    gaps AS (  -- days between consecutive distinct payment dates
        SELECT userId, accountId, insuranceType, providerKey,
               d - lag(d) OVER (PARTITION BY userId, accountId, insuranceType, providerKey ORDER BY d) AS gap
        FROM (SELECT DISTINCT userId, accountId, insuranceType, providerKey, bookingDate AS d FROM keyed)
    ),
    medians AS (
        SELECT userId, accountId, insuranceType, providerKey, median(gap) AS m
        FROM gaps WHERE gap IS NOT NULL GROUP BY ALL
    ),
    insurances AS (
        SELECT l.userId, l.accountId, l.insuranceType, l.provider, l.amount, tt.paymentsCount, tt.totalAmount,
               l.lastPaymentDate,
               CASE
                   WHEN m.m IS NULL THEN 'UNKNOWN'
                   WHEN m.m BETWEEN 25 AND 35 THEN 'MONTHLY'
                   WHEN m.m BETWEEN 80 AND 100 THEN 'QUARTERLY'
                   WHEN m.m BETWEEN 170 AND 200 THEN 'HALF_YEARLY'
                   WHEN m.m BETWEEN 350 AND 380 THEN 'YEARLY'
                   ELSE 'IRREGULAR'
               END AS frequency
        FROM latest l
        JOIN totals tt USING (userId, accountId, insuranceType, providerKey)
        LEFT JOIN medians m USING (userId, accountId, insuranceType, providerKey)
    ),
    per_account AS (
        SELECT userId, accountId, sum(totalAmount) AS amount,
               list({{'insuranceType': insuranceType, 'provider': provider,
                      'amount': CAST(amount AS VARCHAR), 'paymentsCount': paymentsCount,
                      'totalAmount': CAST(CAST(totalAmount AS DECIMAL(38, 2)) AS VARCHAR),
                      'lastPaymentDate': CAST(lastPaymentDate AS VARCHAR), 'frequency': frequency}}
                    ORDER BY insuranceType, provider) AS insurances
        FROM insurances
        GROUP BY userId, accountId
    )
    SELECT userId,
           list({{'accountId': accountId, 'amount': CAST(CAST(amount AS DECIMAL(38, 2)) AS VARCHAR),
                  'insurances': insurances}} ORDER BY accountId) AS accounts
    FROM per_account
    GROUP BY userId
    ORDER BY userId
) TO '{out}' (FORMAT json);
